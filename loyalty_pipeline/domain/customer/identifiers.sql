-- Every identifier the id graph knows and the person it finds now: what a lookup by any id, email or name reads.
-- name: identifiers
SELECT id_type, id_value, arg_max(customer_id, linked_on) AS user_id FROM identity.id_graph GROUP BY ALL

-- The values whose person may have changed: every value linked to a touched person, and every value that found one.
-- name: touched_values
SELECT id_value FROM identity.id_graph WHERE customer_id IN (SELECT person FROM touched_people)
UNION SELECT id_value FROM customer.identifiers WHERE user_id IN (SELECT person FROM touched_people)

-- name: identifiers_of_values
SELECT id_type, id_value, arg_max(customer_id, linked_on) AS user_id FROM identity.id_graph
WHERE id_value IN (SELECT id_value FROM touched_values) GROUP BY ALL
