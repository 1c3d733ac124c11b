"""From a media file to faces: frame sampling, face detection with landmarks, SBI's crop rules."""
from .crops import (
    FaceCrop,
    clip_box,
    cut_stored_crop,
    context_crop_box,
    face_crop_box,
    keep_large_faces,
    sbi_test_crop_box,
    stored_crop_box,
    train_margin_factors,
)
from .detect import (
    DEFAULT_FACE_DETECTOR,
    FACE_DETECTORS,
    Face,
    FaceDetector,
    DlibFaceDetector,
    create_face_detector,
    default_face_detector,
    require_face_detector,
    synthesize_forehead,
)
from .frames import MediaError, SampledFrames, is_image, read_image, sample_frame_indices, sample_frames

__all__ = [
    "FaceCrop", "clip_box", "cut_stored_crop", "context_crop_box", "face_crop_box", "keep_large_faces",
    "sbi_test_crop_box", "stored_crop_box", "train_margin_factors", "DEFAULT_FACE_DETECTOR", "FACE_DETECTORS",
    "Face", "FaceDetector", "DlibFaceDetector", "create_face_detector", "default_face_detector",
    "require_face_detector", "synthesize_forehead", "MediaError",
    "SampledFrames", "is_image", "read_image", "sample_frame_indices", "sample_frames",
]
