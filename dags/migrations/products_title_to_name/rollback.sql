-- ROLLBACK: undoes expand.sql (and the index step). The old code never stopped writing title and price,
-- and the trigger copied the new code's writes back into title, so dropping the new columns loses nothing.

DROP INDEX CONCURRENTLY IF EXISTS idx_products_name;

DROP TRIGGER IF EXISTS products_sync_title_name ON products;
DROP FUNCTION IF EXISTS products_sync_title_name();
ALTER TABLE products DROP CONSTRAINT IF EXISTS products_name_not_null;
ALTER TABLE products DROP COLUMN IF EXISTS price_cents;
ALTER TABLE products DROP COLUMN IF EXISTS name;
