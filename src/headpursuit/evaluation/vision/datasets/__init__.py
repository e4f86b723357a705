"""Procedural image generators of the VLM testbed (stand-ins for SVHN, GTSRB, DTD, EuroSAT and
RESISC45); the registry that names them is :mod:`headpursuit.evaluation.vision.data`."""
