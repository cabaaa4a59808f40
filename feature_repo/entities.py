"""Entities: the dataset's own ids (customer_id = household_id)."""

from feast import Entity, ValueType

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64,
                  description="A household of the Complete Journey data")
store = Entity(name="store", join_keys=["store_id"], value_type=ValueType.INT64, description="A store")
product = Entity(name="product", join_keys=["product_id"], value_type=ValueType.INT64, description="A product")
coupon = Entity(name="coupon", join_keys=["coupon_upc"], value_type=ValueType.INT64, description="A coupon UPC")
