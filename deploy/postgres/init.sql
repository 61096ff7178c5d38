-- One database per service (each keeps its own Alembic history); run once on a fresh volume.
CREATE DATABASE taskroute_gateway OWNER taskroute;
CREATE DATABASE taskroute_router OWNER taskroute;
CREATE DATABASE taskroute_vault OWNER taskroute;
