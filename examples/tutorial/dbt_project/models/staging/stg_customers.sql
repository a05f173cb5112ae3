-- The CRM exports one row per change: keep each customer's latest row, and normalise the free-text fields.
with ranked as (
    select
        *,
        row_number() over (partition by customer_id order by updated_at desc) as version_rank
    from {{ source('raw', 'raw_customers') }}
)

select
    cast(customer_id as integer) as customer_id,
    trim(first_name) as first_name,
    trim(last_name) as last_name,
    nullif(lower(trim(email)), '') as email,
    upper(trim(country)) as country_code,
    cast(signed_up_at as date) as signed_up_on,
    cast(updated_at as timestamp) as updated_at
from ranked
where version_rank = 1
