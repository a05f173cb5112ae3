-- The list the marketing team asked for: one row per customer, with whether we may e-mail them.
select
    customer_id,
    first_name || ' ' || last_name as full_name,
    email,
    email is not null as is_contactable,
    country_code,
    signed_up_on,
    date_trunc('month', signed_up_on)::date as signup_month
from {{ ref('stg_customers') }}
order by customer_id
