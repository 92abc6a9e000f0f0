demoapp:
  image: pigeon/demoapp
  build: true
  base_image: pigeon/base:bookworm
