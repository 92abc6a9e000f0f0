include:
  - .build
