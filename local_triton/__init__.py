"""The local Triton Inference Server (nvidia-pytriton's tritonserver): its virtualenv, launcher."""
