# Stack definitions: one entry per app (see docs/pillar.md for every key).
stacks:
  app:
    version: '1.0'                  # the version an action uses when it names none
    loadbal:
      target: '^(lab|debian)-minion$'  # where HAProxy runs: the lab's minion or the Vagrant one
      target_type: pcre             # (a list, L@, would fail on the one that does not exist)
      frontend: www                 # a frontend of the haproxy formula's pillar
      backend_port: 8080            # the load-balanced containers listen here
      default_network: pigeon       # docker network shared by HAProxy and load-balanced containers
      healthcheck:
        path: /healthz
        status: 200
        interval: 1s
        timeout: 30                 # seconds a release may take to become healthy
      drain_timeout: 10             # seconds a slot may take to drain before its containers stop
    config:
      target: '^(lab|debian)-minion$'  # where the app runs
      target_type: pcre
      formula: demoapp              # applied before the containers start (builds the image)
      build_dir: /srv/pigeon/build/demoapp  # one folder per version (the formula's); prune cleans it
    task_definitions:
      count: 2                      # replicas of the whole set of services
      web:
        docker_config:
          image: pigeon/demoapp     # no tag: the stack's version is the tag
          labels:
            - register_backend=true # HAProxy routes to this service
      api:
        docker_config:
          image: pigeon/demoapp
          environment:
            - ROLE=api
