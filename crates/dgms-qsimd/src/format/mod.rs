//! The packed model format (`*.dgms.safetensors`).
