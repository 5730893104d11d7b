-- A record changes nothing when each of its identifiers is known and they all find one person (a returning
-- customer's purchase, click or message): dropped, so a day costs what is new in it, not its number of events.
-- name: settled
DELETE FROM observed WHERE record IN (
    SELECT o.record FROM observed AS o
    LEFT JOIN (SELECT id_type, id_value, arg_max(customer_id, linked_on) AS customer_id FROM identity.id_graph
               WHERE linked_on < $day AND id_value IN (SELECT id_value FROM observed) GROUP BY ALL) AS k
           ON k.id_type = o.id_type AND k.id_value = o.id_value
    GROUP BY o.record HAVING bool_and(k.customer_id IS NOT NULL) AND count(DISTINCT k.customer_id) = 1
)

-- Strong values that would put more than $max_accounts accounts in one person (a shared office address, a shop's
-- card): from the day on they link nothing, and are listed (identity.crowded_values). A value joining several people
-- brings the accounts those people had before the day, and the new account ids on its records.
-- name: crowded
CREATE OR REPLACE TEMP TABLE crowded AS
WITH touched AS (
    SELECT v.id_value, coalesce(k.customer_id, o.id_value) AS person,
           o.id_type = 'user_id' AND k.customer_id IS NULL AS new_account
    FROM observed AS v
    JOIN observed AS o ON o.record = v.record AND o.strength = 'strong'
    LEFT JOIN known AS k ON k.id_value = o.id_value
    WHERE v.strength = 'strong' AND v.id_type <> 'user_id'
), linking AS (
    SELECT id_value, person, new_account FROM touched
    WHERE id_value IN (SELECT id_value FROM touched GROUP BY id_value HAVING count(DISTINCT person) > 1)
), accounts_of AS (  -- the accounts of the people they join, as of the day before
    SELECT id_value AS account, arg_max(customer_id, linked_on) AS person FROM identity.id_graph
    WHERE id_type = 'user_id' AND linked_on < $day
      AND id_value IN (SELECT id_value FROM identity.id_graph WHERE id_type = 'user_id' AND linked_on < $day
                       AND customer_id IN (SELECT person FROM linking))
    GROUP BY id_value
), accounts AS (
    SELECT l.id_value, l.person, a.account FROM linking AS l JOIN accounts_of AS a ON a.person = l.person
    UNION
    SELECT id_value, person, person FROM linking WHERE new_account
)  -- a value joining one person with accounts to account-less keys adds no account
SELECT id_value, count(DISTINCT account) AS accounts FROM accounts GROUP BY id_value
HAVING count(DISTINCT person) > 1 AND count(DISTINCT account) > $max_accounts

-- Vertices are 'v:<value>' (a strong value seen today) and 'c:<customer_id>' (a person known before the day).
-- Strong links: a record's strong values with each other (a star from its first), a known value with its person.
-- name: strong_edges
CREATE OR REPLACE TEMP TABLE edges AS
SELECT DISTINCT 'v:' || first_value AS a, 'v:' || id_value AS b, false AS weak
FROM (SELECT record, id_value, min(id_value) OVER (PARTITION BY record) AS first_value
      FROM observed WHERE strength = 'strong')
UNION
SELECT 'v:' || id_value, 'c:' || customer_id, false FROM known

-- An account: a value seen as a user_id today, or a person whose id is an account id.
-- name: account_vertices
CREATE OR REPLACE TEMP TABLE account_vertices AS
SELECT DISTINCT 'v:' || id_value AS vertex FROM observed WHERE id_type = 'user_id'
UNION SELECT 'c:' || id_value FROM identity.id_graph WHERE id_type = 'user_id' AND linked_on < $day

-- Each final component's id: its earliest account, else its earliest identifier.
-- name: canonical
CREATE OR REPLACE TEMP TABLE canonical AS
WITH seen_before AS (
    SELECT id_value, min(first_seen_at) AS at FROM identity.id_graph
    WHERE strength = 'strong' AND linked_on < $day AND id_value IN (SELECT substr(vertex, 3) FROM final_pass)
    GROUP BY id_value
), seen_today AS (
    SELECT id_value, min(seen_at) AS at FROM observed GROUP BY id_value
), members AS (
    SELECT f.component, f.vertex, substr(f.vertex, 3) AS id, account.vertex IS NOT NULL AS is_account,
           coalesce(before.at, today.at) AS first_seen_at
    FROM final_pass AS f
    LEFT JOIN account_vertices AS account ON account.vertex = f.vertex
    LEFT JOIN seen_before AS before ON before.id_value = substr(f.vertex, 3)
    LEFT JOIN seen_today AS today ON today.id_value = substr(f.vertex, 3)
)
SELECT vertex, component, id,
       first_value(id) OVER (PARTITION BY component ORDER BY is_account DESC, first_seen_at, id) AS customer_id
FROM members

-- The day's new rows: identifiers seen for the first time, the identifiers of merged people, and weak values.
-- name: day_rows
CREATE OR REPLACE TEMP TABLE day_graph AS
WITH new_ids AS (
    SELECT id_type, id_value, strength, min(record) AS source, min(seen_at) AS first_seen_at
    FROM observed
    ANTI JOIN (SELECT id_type, id_value FROM identity.id_graph
               WHERE linked_on < $day AND id_value IN (SELECT id_value FROM observed)) USING (id_type, id_value)
    GROUP BY ALL
), weak_linked AS (
    SELECT DISTINCT substr(e.a, 3) AS key FROM edges AS e WHERE e.weak
)
SELECT n.id_type, n.id_value, c.customer_id, 'strong',
       CASE WHEN n.id_type = 'user_id' THEN 'account'
            WHEN n.id_type = 'customer_key' AND n.id_value IN (SELECT key FROM weak_linked) THEN 'link_if_unique'
            WHEN n.id_type = 'customer_key' THEN 'key'
            ELSE 'link_on:' || n.id_type END,
       n.source, n.first_seen_at, $day
FROM new_ids AS n JOIN canonical AS c ON c.vertex = 'v:' || n.id_value
WHERE n.strength = 'strong'
UNION ALL  -- a weak value is an identifier of the one person carrying it
SELECT n.id_type, n.id_value, coalesce(c.customer_id, substr(u.carrier, 3)), 'weak', 'link_if_unique:' || n.id_type,
       n.source, n.first_seen_at, $day
FROM new_ids AS n
JOIN weak_unique AS u ON u.id_value = n.id_value
LEFT JOIN canonical AS c ON c.vertex = u.carrier
WHERE n.strength = 'weak'
UNION ALL  -- every identifier of a person merged into another moves with it
SELECT g.id_type, g.id_value, c.customer_id, g.strength, 'merge', m.cause, g.first_seen_at, $day
FROM identity.id_graph AS g
JOIN canonical AS c ON c.vertex = 'c:' || g.customer_id
JOIN day_merges AS m ON m.merged_id = g.customer_id
WHERE g.linked_on < $day AND c.customer_id <> g.customer_id

-- name: day_merges
CREATE OR REPLACE TEMP TABLE day_merges AS
SELECT $day AS day, c.id AS merged_id, c.customer_id AS into_id,
       coalesce((SELECT 'linked by ' || min(o.record) FROM observed AS o JOIN canonical AS oc
                 ON oc.vertex = 'v:' || o.id_value WHERE oc.component = c.component), 'linked') AS cause
FROM canonical AS c WHERE c.vertex LIKE 'c:%' AND c.id <> c.customer_id

-- Whose lifetime rows a day changes (the change log, loyalty_pipeline/lib/touched.py): both sides of its merges; and when
-- the day is rebuilt, whom its rows resolved before and resolve now. A new identifier alone moves no earlier purchase
-- (none was keyed by it); its own purchases are logged with the day's purchases.
-- name: day_touched
SELECT CASE WHEN strength = 'strong' THEN id_value END AS person FROM identity.id_graph WHERE linked_on = $day
UNION ALL SELECT customer_id FROM identity.id_graph WHERE linked_on = $day
UNION ALL SELECT merged_id FROM identity.merges WHERE day = $day
UNION ALL SELECT into_id FROM identity.merges WHERE day = $day
UNION ALL SELECT id_value FROM day_graph WHERE EXISTS (SELECT 1 FROM identity.id_graph WHERE linked_on = $day)
UNION ALL SELECT customer_id FROM day_graph WHERE EXISTS (SELECT 1 FROM identity.id_graph WHERE linked_on = $day)
UNION ALL SELECT merged_id FROM day_merges UNION ALL SELECT into_id FROM day_merges

-- Whose identifiers a day changes (a new email, card, phone or name shown on their profile): the people of the day's
-- graph rows, those it replaces (a rebuilt day) and its new ones. Apart from DAY_TOUCHED, which lifetime tables read.
-- name: day_identifiers
SELECT customer_id AS person FROM identity.id_graph WHERE linked_on = $day UNION ALL SELECT customer_id FROM day_graph
