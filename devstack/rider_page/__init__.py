"""The rider page: a small page that shows a rider's payment links and statuses live."""
