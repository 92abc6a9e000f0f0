# HAProxy in a docker container: configuration, then the running container.
include:
  - .config
  - .service
