-- What expr::type can do (pg_cast, plus I/O conversion to and from string types): whether a plan's type change can run.
json_build_object(
   'pairs', (SELECT json_agg(json_build_array(format_type(c.castsource, NULL), format_type(c.casttarget, NULL))) FROM pg_cast c),
   'strings', (SELECT json_agg(format_type(t.oid, NULL)) FROM pg_type t WHERE t.typcategory = 'S' AND t.typtype = 'b'))
