"""What each role will see on each host of the inventory, whatever --limit says.

The preflight (the ``check_inventory`` action) checks every host against every other before
anything is touched. Ansible's ``hostvars`` cannot serve it: for another host it carries
what the inventory and ``-e`` set, but not role defaults, which only a play running the role
on that very host adds. :func:`views` puts them together as Ansible's precedence does: the
role's defaults (after its dependencies'), under the host's own variables (inventory
group_vars and host_vars, ``-e``), templated as on that host.

It returns ``{"groups": {host: [group, ...]}, "set": {host: [name, ...]},
"specs": {role: {option: spec}}, "views": {role: {host: {option: value}}},
"errors": {host: {option: message}}}``: for every option of a role's
``meta/argument_specs.yml`` (and its dependencies'), its value on each host the role runs
on (``no_log`` options as stars of the same length, never the value) or why it cannot be
templated; and the names each host sets itself that carry a kit prefix, for the typo check.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleError
from ansible.utils.vars import combine_vars

# The collection's roles, beside its plugins.
ROLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "roles")

# Variable name prefixes the kit owns: a name with one of these that no role declares is a typo.
PREFIXES = ("app_", "backup_", "db_", "firewall_", "mysql_", "network_", "nginx_", "private_")


def hidden(value: Any) -> Any:
    """A secret as stars of its length; a mapping of secrets keeps its keys (their names
    are not secret, and the checks read its shape)."""
    if isinstance(value, Mapping):
        return {key: "*" * len(str(item)) for key, item in value.items()}
    return "*" * len(str(value))


class Views:
    """Built with the running task's templar and loader (an action plugin's own)."""

    def __init__(self, templar: Any, loader: Any, roles_dir: str = ROLES_DIR) -> None:
        self._templar = templar
        self._loader = loader
        self.roles_dir = roles_dir

    def of(self, hostvars: Any, roles: Mapping[str, Any]) -> dict[str, Any]:
        """``roles``: each role and the hosts it runs on."""
        roles_dir = self.roles_dir
        out: dict[str, Any] = {"groups": {}, "set": {}, "specs": {}, "views": {}, "errors": {}}
        own: dict[str, dict[str, Any]] = {}
        for role, hosts in roles.items():
            defaults: dict[str, Any] = {}
            options: dict[str, Any] = {}
            for name in self._chain(roles_dir, role):
                defaults = combine_vars(defaults, self._load(roles_dir, name, "defaults/main.yml"))
                specs = self._load(roles_dir, name, "meta/argument_specs.yml")
                found = specs.get("argument_specs", {}).get("main", {}).get("options", {})
                out["specs"][name] = found
                options.update(found)
            view = out["views"][role] = {}
            for host in hosts or []:
                if host not in own:
                    raw = hostvars.raw_get(host)
                    if not isinstance(raw, dict):
                        raise AnsibleError(f"check_inventory: {host} is not in the inventory")
                    own[host] = raw
                    out["groups"][host] = list(raw.get("group_names", []))
                    out["set"][host] = sorted(n for n in raw if n.startswith(PREFIXES))
                errors = out["errors"].setdefault(host, {})
                # role_path: where the role's own files are, as in a play.
                here = {"role_path": os.path.abspath(os.path.join(roles_dir, role))}
                view[host] = self._view(
                    combine_vars(combine_vars(defaults, own[host]), here), options, hostvars, errors
                )
        return out

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
            found[name] = hidden(value) if spec.get("no_log") else value
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
            name = name.rsplit(".", 1)[-1]  # idleproof.kit.shared: this collection's own
            chain += [r for r in self._chain(roles_dir, name) if r not in chain]
        return [*chain, role]
