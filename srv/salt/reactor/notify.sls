{#- Every action's outcome (pigeon/deploy/<app>/<action>, published by the deploy runner) posted
    to the chat webhook of the master's pillar (pigeon_notify:url). Only the tag is passed: the
    runner posts what Pigeon's own history says, never the event's data. #}
pigeon-reactor-notify:
  runner.pigeon_notify.post:
    - args:
      - tag: {{ tag | tojson }}
