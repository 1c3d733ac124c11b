"""hcsi"""
