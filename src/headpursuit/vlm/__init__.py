"""Vision-language part: the tiny real VLM (SmolLM2 + a small CLIP tower), image data, tasks."""

from .tiny import IMAGE_TOKEN, assemble_tiny_vlm, build_tiny_vlm, load_tiny_vlm, vlm_prompt

__all__ = ["IMAGE_TOKEN", "assemble_tiny_vlm", "build_tiny_vlm", "load_tiny_vlm", "vlm_prompt"]
