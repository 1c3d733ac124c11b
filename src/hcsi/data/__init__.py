"""Datasets: preprocessing of videos into stored face crops, and the SBI training / validation sets."""
