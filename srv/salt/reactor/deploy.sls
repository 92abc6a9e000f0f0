{#- A CI event asks for a deployment: salt-api's webhook /hook/pigeon/deploy (signed with the
    shared secret) or the event pigeon/ci/deploy from a CI minion. No logic here: the deploy
    runner checks the signature and the request, runs the orchestration, and publishes the
    outcome under pigeon/deploy/. #}
pigeon-reactor-deploy:
  runner.deploy.ci_event:
    - args:
      - event: {{ data | tojson }}
      - tag: {{ tag | tojson }}
