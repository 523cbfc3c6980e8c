-- The sample ERP database of `cdc-agent demo` (SQLite). Prices and discounts are NUMERIC(p,s): the agent
-- sends them as exact decimal strings with the declared scale ("12.50"), as the contract asks.
PRAGMA journal_mode = WAL;
PRAGMA application_id = 1128547137;      -- 'CDCA': marks a database the demo created (and may recreate)

CREATE TABLE price_tiers (
    tier_code    TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    discount_pct NUMERIC(5,2) NOT NULL
);

CREATE TABLE order_status (            -- the ERP's single-letter status codes
    code        TEXT PRIMARY KEY,
    description TEXT NOT NULL
);

CREATE TABLE customers (
    customer_id  INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    email        TEXT,
    price_tier   TEXT NOT NULL REFERENCES price_tiers (tier_code),
    discount_pct NUMERIC(5,2) NOT NULL DEFAULT 0,
    created_at   DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE addresses (
    address_id  INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (customer_id),
    kind        TEXT NOT NULL CHECK (kind IN ('billing', 'shipping')),
    street      TEXT NOT NULL,
    city        TEXT NOT NULL,
    postcode    TEXT NOT NULL,
    country     TEXT NOT NULL
);

CREATE TABLE orders (
    order_id    INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (customer_id),
    status      TEXT NOT NULL REFERENCES order_status (code),
    total       NUMERIC(12,2) NOT NULL,
    ordered_at  DATETIME NOT NULL
);

CREATE TABLE order_lines (
    order_id   INTEGER NOT NULL REFERENCES orders (order_id),
    line_no    INTEGER NOT NULL,
    sku        TEXT NOT NULL,
    qty        INTEGER NOT NULL,
    unit_price NUMERIC(12,2) NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

INSERT INTO price_tiers VALUES ('STD', 'Standard', 0), ('SLV', 'Silver', 5), ('GLD', 'Gold', 12.5),
                               ('PLT', 'Platinum', 20);

INSERT INTO order_status VALUES ('N', 'new / accepted'), ('H', 'on hold'), ('A', 'allocated'),
                                ('P', 'partially shipped'), ('S', 'shipped'), ('I', 'invoiced'), ('R', 'returned');

INSERT INTO customers (customer_id, name, email, price_tier, discount_pct) VALUES
    (1, 'Alder & Sons', 'orders@alder.example', 'GLD', 12.5),
    (2, 'Birchwood GmbH', 'einkauf@birchwood.example', 'SLV', 5),
    (3, 'Cedar Logistics', 'buy@cedar.example', 'STD', 0),
    (4, 'Dogwood SARL', 'achats@dogwood.example', 'STD', 0),
    (5, 'Elm Street Bakery', 'hello@elm.example', 'SLV', 5),
    (6, 'Fir Outdoor AB', 'inkop@fir.example', 'PLT', 20);

INSERT INTO addresses (customer_id, kind, street, city, postcode, country) VALUES
    (1, 'billing', '12 Mill Lane', 'Leeds', 'LS1 4AB', 'GB'),
    (1, 'shipping', 'Unit 7, Canal Wharf', 'Leeds', 'LS11 5PS', 'GB'),
    (2, 'billing', 'Lindenstraße 4', 'Kassel', '34117', 'DE'),
    (2, 'shipping', 'Lindenstraße 4', 'Kassel', '34117', 'DE'),
    (3, 'shipping', '88 Harbour Road', 'Cork', 'T12 X7Y2', 'IE'),
    (4, 'shipping', '3 rue des Tanneurs', 'Lyon', '69002', 'FR'),
    (5, 'shipping', '221 Elm Street', 'Bristol', 'BS1 5TR', 'GB'),
    (6, 'shipping', 'Storgatan 19', 'Umeå', '903 26', 'SE');

INSERT INTO orders VALUES (1001, 1, 'I', 349.80, '2026-01-05 09:12:00'), (1002, 2, 'S', 89.90, '2026-01-06 14:40:00');
INSERT INTO order_lines VALUES (1001, 1, 'TENT-2P', 2, 149.90), (1001, 2, 'PEG-SET', 5, 10.00),
                               (1002, 1, 'LAMP-LED', 1, 89.90);
