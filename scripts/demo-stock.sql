-- The demo shop's stock, for `scripts/demo` (rules on). Each row shows one rule at work:
-- plenty of stock, a last unit, backorder, none left, a price floor above the listed price,
-- and one catalogue SKU missing altogether (SHOP-JBL-FLIP6: unknown, sent to review).
INSERT INTO acceptance_stock (sku, available, min_price, backorder) VALUES
    ('SHOP-AIRPODS-PRO2',     25, 299.00, false),
    ('SHOP-SONY-XM5',          6, 399.00, false),
    ('SHOP-LG-OLED55',         0, 1599.00, true),   -- made to order: accepted on backorder
    ('SHOP-SWITCH-OLED',       1, NULL,   false),   -- the last unit: later lines are refused
    ('SHOP-ANKER-65W',        40, 79.99,  false),   -- listed at 59.99: below the floor, review
    ('SHOP-LOGI-MX3S',        12, 109.00, false),
    ('SHOP-BREVILLE-BES870',   3, 799.00, false),
    ('SHOP-SAMSUNG-T7-1TB',    0, NULL,   false),   -- sold out: refused
    ('SHOP-KOBO-CLARA-BW',    10, NULL,   false),
    ('SHOP-USB-C-CABLE-2M',  200, 9.99,   false)
ON CONFLICT (sku) DO UPDATE
    SET available = EXCLUDED.available, min_price = EXCLUDED.min_price,
        backorder = EXCLUDED.backorder, updated_at = now();
