"""Fixed vocabularies of the generator (fake names and words, in the style of Faker's en_US)."""

GENRES: tuple[str, ...] = (
    "Rock", "Pop", "Hip Hop", "Jazz", "Electronic", "Classical", "Country", "Blues", "R&B",
    "Reggae", "Folk", "Metal", "Punk", "Funk", "Indie", "Alternative", "Techno",
)  # fmt: skip

# How often each genre is a user's favourite (same order as GENRES): mainstream genres dominate.
GENRE_WEIGHTS: tuple[float, ...] = (
    14, 16, 12, 5, 9, 4, 6, 3, 7, 3, 4, 5, 3, 2, 7, 5, 4,
)  # fmt: skip

GENDERS: tuple[str, ...] = (
    "Male", "Female", "Non-binary", "Genderqueer", "Genderfluid", "Agender", "Bigender",
    "Gender questioning", "Gender nonconforming",
)  # fmt: skip

GENDER_WEIGHTS: tuple[float, ...] = (45, 45, 3, 1.5, 1.5, 1, 1, 1, 1)

FIRST_NAMES: tuple[str, ...] = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William",
    "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Charles", "Karen", "Christopher", "Nancy", "Daniel", "Lisa", "Matthew", "Betty", "Anthony",
    "Margaret", "Mark", "Sandra", "Donald", "Ashley", "Steven", "Kimberly", "Paul", "Emily",
    "Andrew", "Donna", "Joshua", "Michelle", "Kenneth", "Dorothy", "Kevin", "Carol", "Brian",
    "Amanda", "George", "Melissa", "Edward", "Deborah", "Ronald", "Stephanie", "Timothy",
    "Rebecca", "Jason", "Sharon", "Jeffrey", "Laura", "Ryan", "Cynthia", "Jacob", "Kathleen",
    "Gary", "Amy", "Nicholas", "Shirley", "Eric", "Angela", "Jonathan", "Helen", "Stephen",
    "Anna", "Larry", "Brenda", "Justin", "Pamela", "Scott", "Nicole", "Brandon", "Emma",
    "Benjamin", "Samantha", "Samuel", "Katherine", "Gregory", "Christine", "Frank", "Debra",
    "Alexander", "Rachel", "Raymond", "Catherine", "Patrick", "Carolyn", "Jack", "Janet",
    "Dennis", "Ruth", "Jerry", "Maria", "Tyler", "Heather", "Aaron", "Diane", "Jose", "Virginia",
    "Adam", "Julie", "Henry", "Joyce", "Nathan", "Victoria", "Douglas", "Olivia", "Zachary",
    "Kelly", "Peter", "Christina", "Kyle", "Lauren", "Walter", "Joan", "Ethan", "Evelyn",
)  # fmt: skip

LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Gomez", "Phillips", "Evans",
    "Turner", "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris",
    "Morales", "Murphy", "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson",
    "Bailey", "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson", "Watson",
    "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes", "Price",
    "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross", "Foster", "Jimenez",
    "Powell", "Jenkins", "Perry", "Russell", "Sullivan", "Bell", "Coleman", "Butler", "Henderson",
    "Barnes", "Gonzales", "Fisher", "Vasquez", "Simmons", "Romero", "Jordan", "Patterson",
    "Alexander", "Hamilton", "Graham", "Reynolds", "Griffin", "Wallace", "Eaton", "Perkins",
)  # fmt: skip

WORDS: tuple[str, ...] = (
    "exactly", "land", "economy", "river", "light", "summer", "night", "heart", "fire", "city",
    "dream", "shadow", "morning", "ocean", "wild", "golden", "silver", "broken", "electric",
    "midnight", "forever", "paradise", "thunder", "velvet", "echo", "horizon", "neon", "crystal",
    "memory", "gravity", "season", "window", "letter", "garden", "highway", "station", "signal",
    "mirror", "harbor", "island", "desert", "winter", "autumn", "spring", "storm", "rain", "cloud",
    "star", "moon", "sun", "planet", "rocket", "machine", "engine", "wheel", "road", "bridge",
    "tower", "castle", "kingdom", "empire", "story", "song", "melody", "rhythm", "groove", "beat",
    "pulse", "wave", "tide", "current", "spark", "flame", "ember", "ash", "dust", "stone", "glass",
    "paper", "ribbon", "velocity", "future", "history", "together", "alone", "between", "beyond",
    "around", "against", "without", "within", "nothing", "everything", "someone", "anyone",
    "believe", "remember", "forget", "imagine", "wonder", "wander", "travel", "return", "arrive",
    "leave", "stay", "fall", "rise", "run", "walk", "dance", "sing", "shout", "whisper", "call",
    "answer", "question", "reason", "choice", "chance", "fortune", "money", "power", "control",
    "freedom", "justice", "peace", "war", "love", "hate", "hope", "fear", "truth", "lie", "secret",
    "promise", "method", "process", "system", "network", "market", "policy", "theory", "figure",
    "picture", "image", "color", "blue", "red", "green", "black", "white", "yellow", "purple",
    "orange", "simple", "common", "special", "final", "public", "private", "modern", "ancient",
    "young", "old", "new", "early", "late", "quick", "slow", "quiet", "loud", "bright", "dark",
    "warm", "cold", "sweet", "bitter", "strong", "weak", "heavy", "easy", "hard", "soft", "true",
    "happy", "sad", "lonely", "lucky", "crazy", "perfect", "strange", "beautiful", "dangerous",
)  # fmt: skip

EMAIL_DOMAINS: tuple[str, ...] = ("example.org", "example.com", "example.net")
