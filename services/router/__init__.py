"""The router: classifies jobs, keeps teams, routes jobs to them and runs the job lifecycle.

It never sees confidential data: a job carries only the vault's opaque ``confidential_ref``.
"""
