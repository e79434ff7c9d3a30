-- CREATE DATABASE :target like :live (owner, encoding, locale), from template0.
SELECT format('CREATE DATABASE %I TEMPLATE template0', :'target') || coalesce(format(
  ' OWNER %I ENCODING %L LC_COLLATE %L LC_CTYPE %L', pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding),
  d.datcollate, d.datctype), '') FROM (SELECT 1) AS one LEFT JOIN pg_database d ON d.datname = :'live'
\gexec
