"""DynFaceRestore: diffusion-guided blind face restoration."""
__version__ = "0.1.0"
