"""Data for the recipes: generated scenes, real captioned images and text corpora."""
