"""The metadata is in pyproject.toml; this file only declares the optional C extensions: agent/_fastpg.c,
the compiled hot path of the PostgreSQL source, and agent/_fastmy.c, the MySQL / MariaDB source's.
optional=True: without a compiler the install still succeeds and the agent runs on the pure-Python decoders
(agent/fastpath.py, agent/fastmy.py)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("agent._fastpg", ["agent/_fastpg.c", "agent/fastpg_row.c", "agent/fastpg_event.c",
                                               "agent/fastpg_frame.c", "agent/fastpg_glue.c",
                                               "agent/fastpg_libpq.c", "agent/fastpg_blake4.c", "agent/fastpg_store.c",
                                               "agent/fastpg_rows.c",
                                               "agent/fastpg_head.c"],
                             depends=["agent/fastpg.h", "agent/fasttext.h"], optional=True,
                             extra_compile_args=["-O2", "-std=c11", "-Wall"]),
                   # the MySQL / MariaDB source's row-image decoder (agent/fastmy.py), optional the same way
                   Extension("agent._fastmy", ["agent/_fastmy.c", "agent/fastmy_render.c", "agent/fastmy_crc.c"],
                             depends=["agent/fastmy.h", "agent/fasttext.h"], optional=True,
                             extra_compile_args=["-O2", "-std=c11", "-Wall"])])
