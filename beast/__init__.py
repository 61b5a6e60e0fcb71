"""beast: a TorchBeast-style IMPALA trainer for multimodal ViZDoom agents."""

__version__ = "0.1.0"
