haproxy:
  install_method: docker
  image: pigeon/base:bookworm       # built locally by bootstrap/install.sh; upstream: haproxy:2.6
  frontends:
    www:
      port: 8443
      preview_port: 4443
  internal_networks:
    - 172.31.254.0/24               # the lab's "office": clients there reach the release stack
  extra_networks:
    pigeon-office:                  # tests/integration run a client here to act as the office
      subnet: 172.31.254.0/24
