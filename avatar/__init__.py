"""avatar: three sentences in (body shape, appearance, motion), an animated 3D avatar out.

A Hydra + Lightning reimplementation of AvatarCLIP (Hong et al., SIGGRAPH 2022) that runs on a
free, offline default stack (Anny body model, self-trained priors and guidance) and loads the
paper's licensed assets (SMPL, CLIP, VPoser, motion VAE) from user-supplied files.
"""

__version__ = "0.1.0"
