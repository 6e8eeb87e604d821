-- CONTRACT: after the soak only the new code runs; it reads name and writes name and price_cents.
-- The runner applies this file in one transaction: all of it or none of it.

-- SET NOT NULL without a full scan under ACCESS EXCLUSIVE: the CHECK added NOT VALID by expand.sql is
-- validated first (SHARE UPDATE EXCLUSIVE: reads and writes go on), which lets SET NOT NULL skip the scan.
ALTER TABLE products VALIDATE CONSTRAINT products_name_not_null;
ALTER TABLE products ALTER COLUMN name SET NOT NULL;
ALTER TABLE products DROP CONSTRAINT products_name_not_null;

DROP TRIGGER products_sync_title_name ON products;
DROP FUNCTION products_sync_title_name();
ALTER TABLE products DROP COLUMN title;
