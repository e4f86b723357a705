"""The vision-language experiments (paper §4.2): image classification and captioning."""
