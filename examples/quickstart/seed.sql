-- A small shop to try the gateway on.
create table customers (
  id serial primary key,
  name text not null,
  email text not null,
  card_number text,
  notes text
);
create table orders (
  id serial primary key,
  customer_id int not null references customers(id),
  total_cents int not null,
  created_at timestamptz not null default now()
);
insert into customers (name, email, card_number, notes) values
  ('Jane Doe', 'jane@example.com', '4242 4242 4242 4242', 'prefers email'),
  ('John Roe', 'john@example.com', '5555 5555 5555 4444', 'call before delivery'),
  ('Ada Poe', 'ada@example.com', '4000 0566 5566 5556', null);
insert into orders (customer_id, total_cents, created_at) values
  (1, 1299, now() - interval '2 years'),
  (1, 4500, now() - interval '3 days'),
  (2, 999, now() - interval '1 day'),
  (3, 15000, now());
