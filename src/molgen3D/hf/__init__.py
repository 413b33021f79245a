"""TorchTitan <-> Hugging Face: state dicts, export, base folders and the saved-step checks."""
