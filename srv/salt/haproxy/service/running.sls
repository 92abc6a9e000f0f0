{#- The HAProxy container: joined to every app's network, reloaded without loss on change #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import haproxy, haproxy_apps with context %}
{#- the extra networks first: their fixed subnets are taken before docker picks pools for the
    apps' networks (one of docker's default pools may hold an extra network's subnet) #}
{%- set networks = (haproxy.extra_networks.keys() | list
                    + haproxy_apps.values() | map(attribute='default_network') | list) | unique | list %}
include:
  - {{ tplroot }}.config

{%- for network in networks %}
{{ ('haproxy-service-running-' ~ network ~ '-docker-network-present') | tojson }}:
  docker_network.present:
    - name: {{ network | tojson }}
    - labels:
      - pigeon.managed=true
{%-   set extra = haproxy.extra_networks.get(network) or {} %}
{%-   if extra.get('subnet') %}
    - subnet: {{ extra.subnet | tojson }}
{#-     docker reports a gateway it chose only after a restart of the daemon: without it here,
        the next apply would see a changed network and recreate it under the containers' feet #}
    - gateway: {{ (extra.get('gateway') or (extra.subnet | network_hosts | first)) | tojson }}
{%-   endif %}
    - require_in:
      - docker_container: haproxy-service-running-docker-container-running
{%- endfor %}

haproxy-service-running-docker-container-running:
  docker_container.running:
    - name: {{ haproxy.container_name | tojson }}
    - image: {{ haproxy.image | tojson }}
    - command: {{ haproxy.command | tojson }}
    - user: root
    - stop_signal: SIGUSR1
    - stop_timeout: 30
    - restart_policy: unless-stopped
    - binds:
      - {{ (haproxy.host_dir ~ '/etc:/usr/local/etc/haproxy:ro') | tojson }}
      - {{ (haproxy.host_dir ~ '/run:/run/haproxy:rw') | tojson }}
    - port_bindings:
{%- for name, frontend in haproxy.frontends | dictsort %}
      - {{ (frontend.port ~ ':' ~ frontend.port) | tojson }}
      - {{ (frontend.preview_port ~ ':' ~ frontend.preview_port) | tojson }}
{%- endfor %}
      - {{ (haproxy.metrics.port ~ ':' ~ haproxy.metrics.port) | tojson }}
{%- if networks %}
    - networks: {{ networks | tojson }}
{%- endif %}
    - labels:
      - pigeon.managed=true
      - pigeon.role=haproxy
    - require:
      - sls: {{ tplroot }}.config

{#- A changed configuration: check it, keep the servers' addresses, reload (USR2 keeps the listeners) #}
haproxy-service-running-config-check-cmd-run:
  cmd.run:
    - name: {{ ('docker exec ' ~ haproxy.container_name ~ ' haproxy -c -q -f /usr/local/etc/haproxy/haproxy.cfg') | tojson }}
    - onchanges:
      - file: haproxy-config-file-file-managed
      - file: haproxy-config-file-internal-acl-file-managed
    - require:
      - docker_container: haproxy-service-running-docker-container-running

haproxy-service-running-server-state-module-run:
  module.run:
    - haproxy_runtime.dump_server_state:
      - path: {{ (haproxy.host_dir ~ '/run/server-state') | tojson }}
    - onchanges:
      - cmd: haproxy-service-running-config-check-cmd-run

haproxy-service-running-reload-cmd-run:
  cmd.run:
    - name: {{ ('docker kill -s USR2 ' ~ haproxy.container_name) | tojson }}
    - onchanges:
      - module: haproxy-service-running-server-state-module-run

{#- Routes changed in the registry while HAProxy runs: apply them at runtime too #}
haproxy-service-running-routes-module-run:
  module.run:
    - haproxy_runtime.sync_map:
      - map_name: routes.map
    - onchanges:
      - file: haproxy-config-file-routes-file-managed
    - require:
      - docker_container: haproxy-service-running-docker-container-running


{#- The servers the registry holds for stacks HAProxy reaches by address: set at runtime on
    every apply, so a new or rebuilt load balancer routes to the same servers as the others;
    before a reload's server-state dump, which carries them to the new worker #}
{%- set servers = salt['pigeon_pillar.servers'](haproxy_apps.keys() | list) %}
{%- if servers %}
haproxy-service-running-servers-module-run:
  module.run:
    - haproxy_runtime.sync_servers:
      - servers: {{ servers | tojson }}
    - require:
      - docker_container: haproxy-service-running-docker-container-running
    - require_in:
      - module: haproxy-service-running-server-state-module-run
{%- endif %}
