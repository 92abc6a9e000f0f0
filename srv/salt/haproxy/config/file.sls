{#- HAProxy's files on the minion: configuration, certificate, internal networks, routes #}
{%- from tpldir.split('/')[0] ~ "/map.jinja" import haproxy, haproxy_apps with context %}
{%- set etc = haproxy.host_dir ~ '/etc' %}

haproxy-config-file-directories-file-directory:
  file.directory:
    - names:
      - {{ (etc ~ '/maps') | tojson }}
      - {{ (etc ~ '/certs') | tojson }}
      - {{ (haproxy.host_dir ~ '/run') | tojson }}
    - makedirs: True
    - mode: '0750'

haproxy-config-file-file-managed:
  file.managed:
    - name: {{ (etc ~ '/haproxy.cfg') | tojson }}
    - source: salt://{{ tpldir.split('/')[0] }}/templates/haproxy.cfg.jinja
    - template: jinja
    - context:
        haproxy: {{ haproxy | tojson }}
        apps: {{ haproxy_apps | tojson }}
    - require:
      - file: haproxy-config-file-directories-file-directory

haproxy-config-file-internal-acl-file-managed:
  file.managed:
    - name: {{ (etc ~ '/maps/internal.acl') | tojson }}
    - contents: {{ (['# managed by Salt; changes will be overwritten',
                     '# source networks whose traffic goes to the release stack']
                    + haproxy.internal_networks) | join('\n') | tojson }}
    - require:
      - file: haproxy-config-file-directories-file-directory

{#- routes come from the registry on the master (ext_pillar pigeon_registry), so a new
    load balancer converges to the routing the others have #}
haproxy-config-file-routes-file-managed:
  file.managed:
    - name: {{ (etc ~ '/maps/routes.map') | tojson }}
    - contents: {{ salt['pigeon_pillar.routes_map'](haproxy_apps.keys() | list) | tojson }}
    - require:
      - file: haproxy-config-file-directories-file-directory

{%- if haproxy.tls.certificate_source %}
haproxy-config-file-certificate-file-managed:
  file.managed:
    - name: {{ (etc ~ '/certs/pigeon.pem') | tojson }}
    - source: {{ haproxy.tls.certificate_source | tojson }}
    - mode: '0600'
    - require:
      - file: haproxy-config-file-directories-file-directory
    - require_in:
      - file: haproxy-config-file-file-managed
{%- endif %}
