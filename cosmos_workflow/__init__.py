"""cosmos-workflow: prepare prompts for NVIDIA Cosmos-Transfer1's prompt upsampler."""

__version__ = "0.1.0"
