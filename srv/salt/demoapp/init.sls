# The demo app's config formula: its files for the version being released, then its image.
include:
  - .config
  - .image
