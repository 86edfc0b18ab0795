"""The preflight: the kit's checks applied to the whole inventory, on the controller.

    - name: Check the inventory before any host is touched.
      idleproof.kit.check_inventory:
        roles: {firewall: "{{ groups['all'] }}", mysql: "{{ groups['db'] }}", ...}
      run_once: true

``roles`` names each of the collection's roles and the hosts it runs on; ``show: true`` also
returns what each role sees on each host (``views``, the checks' input; secrets as stars).
Every one of those hosts is checked, whatever ``--limit`` says: a change to one host must
still agree with the others. What each role will see on each host (plugin_utils/views.py)
goes through the names and types, the addresses, the values hosts share (wiring.py,
agreement.py), then the same rules as the app at start-up and ``idleproof doctor``
(inventory.py, with the idleproof library on the controller). Fails with one line per
problem, naming the variable to change. No host is contacted, and no secret is in the
result: passwords are stars.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

try:
    from ansible_collections.idleproof.kit.plugins.plugin_utils import inventory, views
except ImportError as exc:  # the idleproof library is missing on the controller
    MISSING = str(exc)
else:
    MISSING = ""


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        if MISSING:
            raise AnsibleError(
                f"check_inventory needs the idleproof library in the controller's Python "
                f"({MISSING}): pip install idleproof where ansible-playbook runs"
            )
        roles = self._task.args.get("roles")
        if not isinstance(roles, dict) or not all(isinstance(h, list) for h in roles.values()):
            raise AnsibleError("check_inventory: roles must map each role to a list of hosts")
        found = views.Views(self._templar, self._loader).of((task_vars or {})["hostvars"], roles)
        problems = inventory.report(found)
        result["changed"] = False
        result["problems"] = problems
        if self._task.args.get("show"):
            result["views"] = found
        if problems:
            result["failed"] = True
            result["msg"] = "; ".join(problems)
        else:
            hosts = sorted({h for hosts in roles.values() for h in hosts})
            result["msg"] = f"{len(hosts)} host(s) checked: consistent"
        return result
