"""Read-only collection from a cluster and its nodes (`live.gather` puts the parts together).

This package's own import stays empty, so the node reader (vipcheck-node, the agents' image)
imports `node_script` without the kubernetes client, pytest or YAML: the agent image holds the
package and pyroute2 alone (Dockerfile; tests/unit/node_reader/test_light_imports.py).
"""
