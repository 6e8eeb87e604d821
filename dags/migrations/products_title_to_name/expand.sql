-- EXPAND: the schema serves the old code (title, price) and the new code (name, price_cents) at once.
-- The runner applies this file in one transaction, each statement with lock_timeout and retries.

ALTER TABLE products ADD COLUMN IF NOT EXISTS name text;
ALTER TABLE products ADD COLUMN IF NOT EXISTS price_cents bigint;

-- Keeps both generations of code consistent until the contract: the old code writes title and price,
-- the new code writes name (and title, and both prices). Whichever column was written wins.
CREATE OR REPLACE FUNCTION products_sync_title_name() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    NEW.name := coalesce(NEW.name, NEW.title);
    NEW.title := coalesce(NEW.title, NEW.name);
    NEW.price_cents := coalesce(NEW.price_cents, round(NEW.price * 100)::bigint);
    RETURN NEW;
  END IF;
  IF NEW.title IS DISTINCT FROM OLD.title THEN
    NEW.name := NEW.title;            -- written by the old code
  ELSIF NEW.name IS DISTINCT FROM OLD.name THEN
    NEW.title := NEW.name;            -- written by the new code alone
  END IF;
  IF NEW.name IS NULL THEN
    NEW.name := NEW.title;            -- a row the backfill has not reached yet
  END IF;
  IF NEW.price IS DISTINCT FROM OLD.price OR NEW.price_cents IS NULL THEN
    NEW.price_cents := round(NEW.price * 100)::bigint;
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER products_sync_title_name
  BEFORE INSERT OR UPDATE ON products
  FOR EACH ROW EXECUTE FUNCTION products_sync_title_name();

-- Rows written from now on satisfy it (the trigger fills name from title, which is NOT NULL); the rows
-- already there are checked by the contract's VALIDATE, after the backfill. NOT VALID: no scan, no wait.
ALTER TABLE products ADD CONSTRAINT products_name_not_null CHECK (name IS NOT NULL) NOT VALID;
