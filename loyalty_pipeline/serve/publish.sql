-- A card written only when it differs from the one stored: an unchanged person costs a read, not a write.
-- name: upsert_card
INSERT INTO cards VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET
    name = excluded.name, email = excluded.email, reward_level = excluded.reward_level,
    last_purchase_on = excluded.last_purchase_on, card = excluded.card
WHERE (name, email, reward_level, last_purchase_on, card)
      IS NOT (excluded.name, excluded.email, excluded.reward_level, excluded.last_purchase_on, excluded.card)

-- name: changes
DELETE FROM identifiers
WHERE (user_id IN (SELECT person FROM temp.people) OR id_value IN (SELECT id_value FROM temp.touched_values))
  AND NOT EXISTS (SELECT 1 FROM temp.new_identifiers AS n WHERE n.id_type = identifiers.id_type
                                                            AND n.id_value = identifiers.id_value);
INSERT INTO identifiers SELECT * FROM temp.new_identifiers WHERE true
ON CONFLICT (id_type, id_value) DO UPDATE SET user_id = excluded.user_id WHERE user_id IS NOT excluded.user_id;
DELETE FROM names WHERE user_id IN (SELECT person FROM temp.people)
  AND NOT EXISTS (SELECT 1 FROM temp.new_names AS n WHERE n.value = names.value AND n.user_id = names.user_id);
INSERT INTO names SELECT * FROM temp.new_names WHERE true ON CONFLICT DO NOTHING

-- The recommendation state of the people whose baskets changed (temp.basket_people) likewise: their baskets and
-- large orders, and the counts of the itemsets their changed baskets held.
-- name: rec_changes
DELETE FROM baskets WHERE user_id IN (SELECT person FROM temp.basket_people)
  AND NOT EXISTS (SELECT 1 FROM temp.new_baskets AS n WHERE n.user_id = baskets.user_id AND n.order_id = baskets.order_id);
INSERT INTO baskets SELECT * FROM temp.new_baskets WHERE true
ON CONFLICT (user_id, order_id) DO UPDATE SET items = excluded.items WHERE items <> excluded.items;
DELETE FROM large_items WHERE user_id IN (SELECT person FROM temp.basket_people)
  AND NOT EXISTS (SELECT 1 FROM temp.new_large_items AS n WHERE n.product_id = large_items.product_id
                  AND n.order_id = large_items.order_id AND n.user_id = large_items.user_id);
INSERT INTO large_items SELECT * FROM temp.new_large_items WHERE true ON CONFLICT DO NOTHING;
DELETE FROM rec_counts WHERE itemset IN (SELECT itemset FROM temp.recounted)
  AND NOT EXISTS (SELECT 1 FROM temp.new_counts AS n
                  WHERE n.itemset = rec_counts.itemset AND n.product_id = rec_counts.product_id);
INSERT INTO rec_counts SELECT * FROM temp.new_counts WHERE true
ON CONFLICT (itemset, product_id) DO UPDATE SET orders = excluded.orders WHERE orders <> excluded.orders

-- The items of their baskets the store holds and the warehouse no longer does, or the other way
-- round (as one JSON array): the itemsets whose counts they moved are recounted.
-- name: changed_baskets
SELECT json_group_array(json(items)) FROM (
    SELECT items FROM (SELECT user_id, order_id, items FROM baskets WHERE user_id IN (SELECT person FROM temp.basket_people)
                       EXCEPT SELECT user_id, order_id, items FROM temp.new_baskets)
    UNION ALL
    SELECT items FROM (SELECT user_id, order_id, items FROM temp.new_baskets
                       EXCEPT SELECT user_id, order_id, items FROM baskets
                       WHERE user_id IN (SELECT person FROM temp.basket_people)))

-- name: staged
CREATE TEMP TABLE people (person TEXT PRIMARY KEY);
CREATE TEMP TABLE gone (person TEXT PRIMARY KEY);
CREATE TEMP TABLE touched_values (id_value TEXT PRIMARY KEY);
CREATE TEMP TABLE new_identifiers (id_type TEXT, id_value TEXT, user_id TEXT, PRIMARY KEY (id_type, id_value));
CREATE TEMP TABLE new_names (value TEXT, user_id TEXT, PRIMARY KEY (value, user_id))

-- name: rec_staged
CREATE TEMP TABLE basket_people (person TEXT PRIMARY KEY);
CREATE TEMP TABLE new_baskets (user_id TEXT, order_id TEXT, items TEXT, PRIMARY KEY (user_id, order_id));
CREATE TEMP TABLE new_large_items (product_id TEXT, order_id TEXT, user_id TEXT);
CREATE TEMP TABLE recounted (itemset TEXT PRIMARY KEY);
CREATE TEMP TABLE new_counts (itemset TEXT, product_id TEXT, orders INTEGER, PRIMARY KEY (itemset, product_id))
