"""What each role will see on each host of the inventory, whatever --limit says.

The preflight (preflight.yml) checks every host against every other before anything is
touched. Ansible's ``hostvars`` cannot serve it: for another host it carries what the
inventory and ``-e`` set, but not role defaults, which only a play running the role on
that very host adds. This lookup puts them together as Ansible's precedence does: the
role's defaults (after its dependencies'), under the host's own variables (inventory
group_vars and host_vars, ``-e``), templated as on that host.

    lookup('kit_inventory', app=groups['app'], mysql=groups['db'], ...)

returns ``{"groups": {host: [group, ...]}, "set": {host: [name, ...]},
"specs": {role: {option: spec}}, "views": {role: {host: {option: value}}},
"errors": {host: {option: message}}}``: for every option of a role's
``meta/argument_specs.yml`` (and its dependencies'), its value on each host the role runs
on (``no_log`` options as stars of the same length, never the value) or why it cannot be
templated; and the names each host sets itself that carry a kit prefix, for the typo check.
"""

from __future__ import annotations

import os
from typing import Any

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase
from ansible.utils.vars import combine_vars

DOCUMENTATION = """
name: kit_inventory
short_description: what each of the kit's roles will see on each host of the inventory
description:
  - Role defaults under each host's own variables, templated as on that host.
  - Keyword arguments name a role and the hosts it runs on.
"""

# Variable name prefixes the kit owns: a name with one of these that no role declares is a typo.
PREFIXES = ("app_", "db_", "firewall_", "mysql_", "network_", "nginx_", "private_")


class LookupModule(LookupBase):
    def run(self, terms: list[Any], variables: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        variables = variables or {}
        # Where Ansible looks for roles: beside the playbook, then ansible.cfg's roles_path.
        search = [os.path.join(variables["playbook_dir"], "roles"), *C.DEFAULT_ROLES_PATH]
        roles_dir = next((d for d in search if os.path.isdir(os.path.join(d, "shared"))), search[0])
        hostvars = variables["hostvars"]
        out: dict[str, Any] = {"groups": {}, "set": {}, "specs": {}, "views": {}, "errors": {}}
        own: dict[str, dict[str, Any]] = {}
        for role, hosts in kwargs.items():
            defaults: dict[str, Any] = {}
            options: dict[str, Any] = {}
            for name in self._chain(roles_dir, role):
                defaults = combine_vars(defaults, self._load(roles_dir, name, "defaults/main.yml"))
                specs = self._load(roles_dir, name, "meta/argument_specs.yml")
                found = specs.get("argument_specs", {}).get("main", {}).get("options", {})
                out["specs"][name] = found
                options.update(found)
            view = out["views"][role] = {}
            for host in self._flatten(hosts or []):
                if host not in own:
                    raw = hostvars.raw_get(host)
                    if not isinstance(raw, dict):
                        raise AnsibleError(f"kit_inventory: {host} is not in the inventory")
                    own[host] = raw
                    out["groups"][host] = list(raw.get("group_names", []))
                    out["set"][host] = sorted(n for n in raw if n.startswith(PREFIXES))
                errors = out["errors"].setdefault(host, {})
                view[host] = self._view(
                    combine_vars(defaults, own[host]), options, hostvars, errors
                )
        return [out]

    def _view(
        self, merged: dict[str, Any], options: dict[str, Any], hostvars: Any, errors: dict[str, str]
    ) -> dict[str, Any]:
        merged["hostvars"] = hostvars
        templar = self._templar.copy_with_new_env(available_variables=merged)
        found: dict[str, Any] = {}
        for name, spec in options.items():
            if name not in merged:
                continue
            try:
                value = templar.template(merged[name], fail_on_undefined=True)
            except AnsibleError as exc:
                errors[name] = " ".join(str(exc.message).split())
                continue
            found[name] = "*" * len(str(value)) if spec.get("no_log") else value
        return found

    def _load(self, roles_dir: str, role: str, path: str) -> dict[str, Any]:
        full = os.path.join(roles_dir, role, path)
        if not os.path.exists(full):
            return {}
        return self._loader.load_from_file(full) or {}

    def _chain(self, roles_dir: str, role: str) -> list[str]:
        """The role after its dependencies (depth first), each once."""
        chain: list[str] = []
        for dep in self._load(roles_dir, role, "meta/main.yml").get("dependencies") or []:
            name = dep if isinstance(dep, str) else dep.get("role", dep.get("name"))
            chain += [r for r in self._chain(roles_dir, name) if r not in chain]
        return [*chain, role]
