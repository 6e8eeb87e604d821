-- The demo shop's data (after 10-schema.sql, the schema tests/fixtures/demo_schema.sql): 20 shops and
-- 100,000 products spread over them, one in fifty soft-deleted. Runs once, on the volume's first start.
INSERT INTO shops (domain) SELECT 'shop-' || g || '.myshopify.com' FROM generate_series(1, 20) g;
INSERT INTO products (shop_id, title, price, deleted_at)
SELECT s.ids[1 + g % array_length(s.ids, 1)], 'Product ' || g, (g % 10000) / 100.0,
       CASE WHEN g % 50 = 0 THEN now() END
FROM generate_series(1, 100000) g, (SELECT array_agg(id ORDER BY domain) AS ids FROM shops) s;
ANALYZE shops, products;
