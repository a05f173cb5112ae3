-- A sign-up date after today means the CRM export is broken: any row returned fails `dbt build`.
select customer_id, signed_up_on
from {{ ref('customers') }}
where signed_up_on > current_date
