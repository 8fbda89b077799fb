"""Reaching the GPU host: `ssh.Connection` (paramiko), `local.LocalConnection`, file transfers.

Both connections satisfy `base.Host`. Import from the submodules; this package imports nothing
so that `import cosmos_workflow.remote.base` stays cheap (no paramiko).
"""
