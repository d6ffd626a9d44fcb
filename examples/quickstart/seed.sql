-- A small shop to try the gateway on. The customers table holds personal
-- data that the mask rules in policies/masks.toml cover.
create table customers (
  id serial primary key,
  name text not null,
  email text not null unique,
  card_number text,
  national_id text,
  notes text,
  profile jsonb
);
create table orders (
  id serial primary key,
  customer_id int not null references customers(id),
  total_cents int not null,
  created_at timestamptz not null default now()
);
-- A view over covered columns: its columns are masked like the table's.
create view customer_contacts as select id, name, email from customers;
insert into customers (name, email, card_number, national_id, notes, profile) values
  ('Jane Doe', 'jane@example.com', '4242 4242 4242 4242', '123-45-6789',
   'prefers email; also reachable at jane.doe@gmail.com',
   '{"tier": "gold", "ssn": "123-45-6789", "contact": {"email": "jane@example.com"}}'),
  ('John Roe', 'john@example.com', '5555 5555 5555 4444', '987-65-4321',
   'paid once with 4000 0566 5566 5556; order ref 4242 4242 4242 4241 is not a card',
   '{"tier": "silver"}'),
  ('Ada Poe', 'ada@example.com', '4000 0566 5566 5556', '111-22-3333', null, null);
insert into orders (customer_id, total_cents, created_at) values
  (1, 1299, now() - interval '2 years'),
  (1, 4500, now() - interval '3 days'),
  (2, 999, now() - interval '1 day'),
  (3, 15000, now());
