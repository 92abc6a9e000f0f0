# Highstate: every minion runs the docker engine; minions with `haproxy` pillar run HAProxy.
base:
  '*':
    - docker
  'I@haproxy:install_method:docker':
    - match: compound
    - haproxy
