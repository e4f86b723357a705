"""Class names of image classification datasets, as data (from each dataset's published names).

Names are lowercase and readable (underscores and CamelCase split into words) because the
model is asked to name the class and is scored by exact match after :func:`normalise`.
"""

from __future__ import annotations

import re

from ...errors import InputError
from .data import DIGIT_NAMES, FASHION_NAMES

MNIST = list(DIGIT_NAMES)
SVHN = list(DIGIT_NAMES)
FASHION_MNIST = list(FASHION_NAMES)

# German Traffic Sign Recognition Benchmark, signnames.csv (classes 0-42).
GTSRB = [
    "speed limit 20 km/h",
    "speed limit 30 km/h",
    "speed limit 50 km/h",
    "speed limit 60 km/h",
    "speed limit 70 km/h",
    "speed limit 80 km/h",
    "end of speed limit 80 km/h",
    "speed limit 100 km/h",
    "speed limit 120 km/h",
    "no passing",
    "no passing for vehicles over 3.5 metric tons",
    "right-of-way at the next intersection",
    "priority road",
    "yield",
    "stop",
    "no vehicles",
    "vehicles over 3.5 metric tons prohibited",
    "no entry",
    "general caution",
    "dangerous curve to the left",
    "dangerous curve to the right",
    "double curve",
    "bumpy road",
    "slippery road",
    "road narrows on the right",
    "road work",
    "traffic signals",
    "pedestrians",
    "children crossing",
    "bicycles crossing",
    "beware of ice/snow",
    "wild animals crossing",
    "end of all speed and passing limits",
    "turn right ahead",
    "turn left ahead",
    "ahead only",
    "go straight or right",
    "go straight or left",
    "keep right",
    "keep left",
    "roundabout mandatory",
    "end of no passing",
    "end of no passing by vehicles over 3.5 metric tons",
]

# EuroSAT (Sentinel-2 land use), folder names split into words.
EUROSAT = [
    "annual crop",
    "forest",
    "herbaceous vegetation",
    "highway",
    "industrial",
    "pasture",
    "permanent crop",
    "residential",
    "river",
    "sea lake",
]

# NWPU-RESISC45 scene classes, alphabetical as published.
RESISC45 = [
    "airplane", "airport", "baseball diamond", "basketball court", "beach", "bridge",
    "chaparral", "church", "circular farmland", "cloud", "commercial area",
    "dense residential", "desert", "forest", "freeway", "golf course", "ground track field",
    "harbor", "industrial area", "intersection", "island", "lake", "meadow",
    "medium residential", "mobile home park", "mountain", "overpass", "palace",
    "parking lot", "railway", "railway station", "rectangular farmland", "river",
    "roundabout", "runway", "sea ice", "ship", "snowberg", "sparse residential", "stadium",
    "storage tank", "tennis court", "terrace", "thermal power station", "wetland",
]  # fmt: skip

# Describable Textures Dataset, 47 categories.
DTD = [
    "banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked",
    "crosshatched", "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly",
    "gauzy", "grid", "grooved", "honeycombed", "interlaced", "knitted", "lacelike", "lined",
    "marbled", "matted", "meshed", "paisley", "perforated", "pitted", "pleated",
    "polka-dotted", "porous", "potholed", "scaly", "smeared", "spiralled", "sprinkled",
    "stained", "stratified", "striped", "studded", "swirly", "veined", "waffled", "woven",
    "wrinkled", "zigzagged",
]  # fmt: skip

CLASS_NAMES: dict[str, list[str]] = {
    "mnist": MNIST,
    "svhn": SVHN,
    "fashion_mnist": FASHION_MNIST,
    "digits": MNIST,
    "gtsrb": GTSRB,
    "eurosat": EUROSAT,
    "resisc45": RESISC45,
    "dtd": DTD,
}

_ARTICLES = {"a", "an", "the"}


def normalise(text: str) -> str:
    """Lowercase, keep the first line, drop punctuation except ``-/.`` inside words, drop
    leading articles and a trailing period: ``"A Seven."`` -> ``"seven"``."""
    line = text.strip().split("\n")[0].lower()
    line = re.sub(r"[^\w\s\-/.]", " ", line).strip().rstrip(".")
    words = line.split()
    while words and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(words)


def class_names(dataset: str) -> list[str]:
    """The class-name list of a dataset by name (see ``CLASS_NAMES``)."""
    key = dataset.lower().replace("-", "_")
    if key not in CLASS_NAMES:
        raise InputError(f"No class names for {dataset!r}; known: {sorted(CLASS_NAMES)}.")
    return list(CLASS_NAMES[key])
