# The docker engine: the package, then the running daemon.
include:
  - .package
  - .service
