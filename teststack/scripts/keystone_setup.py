"""Create the stack's Keystone users, projects and service endpoints.

Run by :mod:`teststack.keystone` with the Keystone venv's interpreter (it
needs openstacksdk), by path; the settings come as JSON on stdin::

    {"auth_url": ..., "region": ..., "admin": {"username", "password",
     "project_name"}, "users": {name: {"password", "project_name",
     "roles"}}, "service": {"type", "name", "url"} or null}

Keystone answers each request in ~0.2 s: projects, users and roles are
listed by name (one request) rather than found (a GET by id first), and
roles are remembered.
"""

import json
import sys

DOMAIN = 'default'


def main():
    from openstack import connection

    cfg = json.load(sys.stdin)
    admin = cfg['admin']
    ident = connection.Connection(
        auth_type='password',
        auth=dict(auth_url=cfg['auth_url'], username=admin['username'],
                  password=admin['password'],
                  project_name=admin['project_name'],
                  user_domain_name='Default', project_domain_name='Default'),
        identity_api_version='3', region_name=cfg['region'],
        interface='public').identity
    roles = {}
    for name, spec in (cfg.get('users') or {}).items():
        project = next(iter(ident.projects(name=spec['project_name'],
                                           domain_id=DOMAIN)), None)
        if project is None:
            project = ident.create_project(name=spec['project_name'],
                                           domain_id=DOMAIN)
        user = next(iter(ident.users(name=name, domain_id=DOMAIN)), None)
        if user is None:
            user = ident.create_user(name=name, password=spec['password'],
                                     domain_id=DOMAIN,
                                     default_project_id=project.id)
        else:
            ident.update_user(user, password=spec['password'])
        for role in spec['roles']:
            if role not in roles:
                roles[role] = (next(iter(ident.roles(name=role)), None)
                               or ident.create_role(name=role))
            ident.assign_project_role_to_user(project, user, roles[role])
    spec = cfg.get('service')
    if spec:
        register_service(ident, spec['type'], spec['name'], spec['url'],
                         cfg['region'])


def register_service(ident, service_type, name, url, region):
    """Create a service and its endpoints, or move them to ``url``."""
    service = next((s for s in ident.services() if s.type == service_type),
                   None)
    if service is None:
        service = ident.create_service(name=name, type=service_type)
    existing = {e.interface: e
                for e in ident.endpoints(service_id=service.id)}
    for interface in ('public', 'internal', 'admin'):
        endpoint = existing.get(interface)
        if endpoint is None:
            ident.create_endpoint(service_id=service.id, interface=interface,
                                  url=url, region_id=region)
        elif endpoint.url != url:
            ident.update_endpoint(endpoint, url=url)


if __name__ == '__main__':
    main()
