"""TF SavedModel → parity-checked ONNX → versioned Triton model repository (`kbrec convert`)."""
